# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "relational"; if header :value "gt" "subject" "M" { discard; }
