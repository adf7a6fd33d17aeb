OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure, stub_result\n'
                                               ">>> _decided, _why = stub_result(fixed_decide, 'Where is my parcel?')\n"
                                               ">>> _leaked = lambda: deploy.traffic.leak_test(fixed_decide, leak_day, policy)['leaked']\n"
                                               ">>> first_failure((lambda: _why is None, lambda: _why), (lambda: _leaked() == 0, lambda: f'{_leaked()} personal-data values still reached the paid "
                                               "API: keep them local even when the local side is down'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
