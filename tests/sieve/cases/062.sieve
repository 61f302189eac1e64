# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["envelope", "subaddress"]; if envelope :user :is "to" "bob" { discard; }
