# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if header :is :contains "subject" "x" { keep; }
