# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if allof (true, not false, anyof(false, true)) { discard; }
