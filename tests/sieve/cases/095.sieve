# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require "body"; if body :content "text/plain" :contains "<b>Bob</b>" { discard; }
