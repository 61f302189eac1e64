# message: bounce.eml
# from: alice@example.org
# to: bob+work@example.net
if not exists "subject" { discard; }
