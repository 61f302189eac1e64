# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["comparator-i;ascii-numeric"]; if header :is :comparator "i;ascii-numeric" "x-count" "042" { discard; }
