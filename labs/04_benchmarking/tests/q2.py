OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert best_concurrency is not ... and best_goodput is not ..., 'not done yet: set best_concurrency and best_goodput'\n"
                                               ">>> assert best_concurrency in settings.concurrencies, f'one of the levels you swept: {settings.concurrencies}'\n"
                                               ">>> assert 0 <= best_goodput, 'goodput is requests per second, never negative'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
