# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "regex"; if header :regex "subject" "(x|y)z" { discard; }
