# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require "body"; if body :contains "Grüße" { discard; }
