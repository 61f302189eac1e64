# message: spam.eml
# from: alice@example.org
# to: bob+work@example.net
require ["spamtestplus", "relational", "comparator-i;ascii-numeric"]; if spamtest :percent :value "ge" :comparator "i;ascii-numeric" "50" { discard; }
