# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if address :all :is "from" "alice@example.org" { discard; }
