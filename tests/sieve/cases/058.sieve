# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
if address :localpart :is "from" "juergen" { discard; }
