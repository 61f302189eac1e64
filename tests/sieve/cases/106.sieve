# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["variables", "fileinto"]; set :lowerfirst :upper "a" "work"; fileinto "${a}";
