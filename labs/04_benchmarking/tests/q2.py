OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> first_failure((lambda: best_concurrency is not ... and best_goodput is not ..., 'not done yet: set best_concurrency and best_goodput'), (lambda: "
                                               "best_concurrency in settings.concurrencies, lambda: f'one of the levels you swept: {settings.concurrencies}, got {best_concurrency!r}'), (lambda: 0 <= "
                                               "best_goodput, lambda: f'goodput is requests per second, never negative: got {best_goodput!r}'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
