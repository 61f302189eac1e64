# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if header :matches "subject" "meet?ng*" { discard; }
