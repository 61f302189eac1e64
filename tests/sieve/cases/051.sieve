# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if address :is "to" "dave@example.net" { discard; }
