# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if header :is :comparator "i;octet" "subject" "meeting tomorrow at 10" { discard; }
