# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["regex", "comparator-i;octet"]; if header :regex :comparator "i;octet" "subject" "^meeting" { discard; }
