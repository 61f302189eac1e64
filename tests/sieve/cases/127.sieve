# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "relational"; if header :value "lt" "subject" "M" { discard; }
