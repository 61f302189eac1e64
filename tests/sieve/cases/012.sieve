# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if anyof (false, true) { discard; }
