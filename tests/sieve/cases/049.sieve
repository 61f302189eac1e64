# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if address :domain :contains "from" "example" { discard; }
