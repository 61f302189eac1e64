# message: plain.eml
# from: alice@example.org
# to: bob+work@example.net
require "vacation"; vacation :handle "h1" :from "bob@example.net" :subject "Re" "Handled.";
