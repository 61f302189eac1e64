# message: mime.eml
# from: alice@example.org
# to: bob+work@example.net
require ["mime"]; if header :mime :anychild :param ["name", "charset"] "content-type" "UTF-8" { discard; }
