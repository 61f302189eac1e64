# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "date"; if date :originalzone "date" "iso8601" "2021-06-01T10:30:00+02:00" { discard; }
