"""``python -m pagestream`` is the ``pagestream`` command."""

import sys

from .cli import main

sys.exit(main())
