# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime", "fileinto"]; if header :mime :anychild :type "content-type" "image" { discard; } else { fileinto "no-image"; }
