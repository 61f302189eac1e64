# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if header :is "X-Count" "42" { discard; }
