# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if header :contains :comparator "i;octet" "subject" "Meeting" { discard; }
