# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if header :contains ["to", "cc"] "carol" { discard; }
