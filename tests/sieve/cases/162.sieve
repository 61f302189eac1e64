# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["date", "relational"]; if currentdate :value "ge" "year" "2020" { discard; }
