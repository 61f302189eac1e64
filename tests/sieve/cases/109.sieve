# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["variables", "fileinto"]; set "a" "x"; set "b" "${a}${a}y"; fileinto "${b}";
