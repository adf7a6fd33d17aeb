OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> first_failure((lambda: biggest_lever is not ... and biggest_swing is not ..., 'not done yet: set biggest_lever and biggest_swing'), (lambda: "
                                               "biggest_lever in {'usd_per_gpu_hour', 'engineer_fte', 'bandwidth_efficiency'}, lambda: f'one of the three input names, got {biggest_lever!r}'), "
                                               "(lambda: isinstance(biggest_swing, (int, float)) and biggest_swing > 0, lambda: f'a swing is a positive amount of USD, got {biggest_swing!r}'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
