# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if size :over "1" { keep; }
