# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
if exists ["x-priority", "x-missing"] { discard; }
