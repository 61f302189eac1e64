# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if address :all :matches "from" "*@example.org" { discard; }
