# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
if header :is "subject" "Grüße aus Köln" { discard; }
