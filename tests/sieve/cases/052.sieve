# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if address :domain :is ["to", "cc"] "example.com" { discard; }
