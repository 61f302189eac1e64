# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "regex"; if header :regex "subject" "^Meeting [a-z]+ at [0-9]+$" { discard; }
