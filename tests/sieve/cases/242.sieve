# message: spam-low.eml
# from: alice@example.org
# to: bob+work@example.net
require ["spamtestplus", "relational", "comparator-i;ascii-numeric"]; if spamtest :percent :count "eq" :comparator "i;ascii-numeric" "1" { discard; }
