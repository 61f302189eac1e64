# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["variables", "fileinto"]; set "box" "Work"; fileinto "${box}";
