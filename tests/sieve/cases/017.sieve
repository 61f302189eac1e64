# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if size :under 1M { discard; }
