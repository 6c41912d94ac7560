"""`python -m emote.clients` runs the `emote` command."""
import sys

from emote.clients.cli import main

sys.exit(main())
