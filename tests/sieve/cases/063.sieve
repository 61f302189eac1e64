# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["envelope", "subaddress"]; if envelope :detail :is "to" "work" { discard; }
