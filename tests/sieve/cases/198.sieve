# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require ["encoded-character", "fileinto"]; fileinto "${hex:41 42}";
