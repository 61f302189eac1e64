# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if not exists "x-missing" { discard; }
