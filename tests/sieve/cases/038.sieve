# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
if header :contains "subject" "Köln" { discard; }
