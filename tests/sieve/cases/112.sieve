# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["variables"]; set "a" "bob"; if string :matches "${a}" "b*" { discard; }
