# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if header :is "subject" "meeting TOMORROW at 10" { discard; }
