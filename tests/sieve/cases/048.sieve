# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if address :localpart :contains "from" "ali" { discard; }
