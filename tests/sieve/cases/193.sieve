# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "duplicate"; if duplicate :header "subject" { discard; }
