# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if address  :is "from" "Alice Example <alice@example.org>" { discard; }
