import sys

from mailserver.cli.main import main

sys.exit(main())
