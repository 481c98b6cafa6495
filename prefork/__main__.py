"""python -m prefork"""

from .cli import main

main()
