# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["spamtestplus", "relational", "comparator-i;ascii-numeric"]; if spamtest :percent :value "eq" :comparator "i;ascii-numeric" "0" { discard; }
