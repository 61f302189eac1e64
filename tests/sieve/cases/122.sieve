# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["relational", "comparator-i;ascii-numeric"]; if header :count "eq" :comparator "i;ascii-numeric" "received" "3" { discard; }
