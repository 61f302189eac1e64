# message: list.eml
# from: alice@example.org
# to: bob+work@example.net
require ["spamtest", "relational", "comparator-i;ascii-numeric"]; if spamtest :value "eq" :comparator "i;ascii-numeric" "1" { discard; }
