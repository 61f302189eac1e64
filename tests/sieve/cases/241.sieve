# message: spam.eml
# from: alice@example.org
# to: bob+work@example.net
require ["spamtestplus", "relational", "comparator-i;ascii-numeric"]; if spamtest :value "eq" :comparator "i;ascii-numeric" "10" { discard; }
